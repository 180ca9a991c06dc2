"""The restorer on tiny configs: cache vs recompute, batching, determinism, cache persistence."""
import pytest
import torch
from model_utils import randomise_lora

from streamrestore.errors import ReferencesError
from streamrestore.model import (
    InstantRestoreNet,
    InstantRestorer,
    LayerReferences,
    ReferenceBatch,
    ReferenceCache,
    tiny_config,
)
from streamrestore.model.attention import value_statistics
from streamrestore.model.cache import paper_cache_bytes_per_reference
from streamrestore.model.config import paper_config
from streamrestore.model.packing import pack_kv

R = 32


def make_restorer(latent="vae", seed=0, **changes):
    torch.manual_seed(seed)
    net = InstantRestoreNet(tiny_config(latent, **changes))
    randomise_lora(net, seed)
    with torch.no_grad():
        net.prompt_embeds.normal_()
    return InstantRestorer(net, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def restorer():
    return make_restorer()


def images(n, seed):
    return torch.rand(n, 3, R, R, generator=torch.Generator().manual_seed(seed))


def recompute_restore(restorer, face, refs):
    """Restore one face computing its references inside the call (no ReferenceCache)."""
    net = restorer.net
    with torch.inference_mode():
        ref_lat = net.encode(refs, reference=True)
        kv = net.reference_kv(ref_lat, restorer.fixed_noise(restorer.config.reference_noise_seed, refs.shape[0]))
        layers = {}
        for name in net.shared_layers:
            k, v = kv[name]
            mean, std = value_statistics(v, restorer.config.adain_eps)
            layers[name] = LayerReferences(k[None], v[None], mean[None], std[None])
        x0 = net.denoise(net.encode(face), restorer.fixed_noise(restorer.config.noise_seed), ReferenceBatch(layers))
        return net.decode(x0)


def test_implements_restorer_protocol(restorer):
    from streamrestore.types import Restorer

    assert isinstance(restorer, Restorer)
    assert restorer.resolution == R


def test_reference_network_shares_base_weights(restorer):
    net = restorer.net
    base = dict(net.unet.named_parameters())
    ref_q = net.ref_unet.up_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q.weight
    lora_q = base["up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.base_layer.weight"]
    assert ref_q is lora_q
    assert net.ref_unet.conv_in.weight.data_ptr() != net.unet.conv_in.weight.data_ptr()
    assert not torch.equal(net.ref_unet.conv_in.weight, net.unet.conv_in.weight)  # trained conv_in differs
    assert len(net.shared_layers) == 4 and all(n.startswith("up_blocks.") and n.endswith("attn1") for n in net.shared_layers)


def test_cached_equals_recomputed(restorer):
    face, refs = images(1, 1), images(3, 2)
    cache = restorer.encode_references(refs)
    cached = restorer.restore(face, [cache])
    fresh = recompute_restore(restorer, face, refs)
    torch.testing.assert_close(cached, fresh, rtol=1e-5, atol=1e-6)


def test_references_change_the_output(restorer):
    face = images(1, 1)
    a = restorer.restore(face, [restorer.encode_references(images(2, 2))])
    b = restorer.restore(face, [restorer.encode_references(images(2, 3))])
    none = restorer.restore(face, [None])
    assert (a - b).abs().max() > 1e-4
    assert (a - none).abs().max() > 1e-4


def test_saved_and_loaded_cache_gives_identical_output(restorer, tmp_path):
    face = images(2, 5)
    cache = restorer.encode_references(images(2, 6))
    path = cache.save(tmp_path / "actor.safetensors")
    loaded = ReferenceCache.load(path)
    assert loaded.key == cache.key and loaded.model == cache.model == restorer.fingerprint
    assert loaded.layer_names == cache.layer_names and loaded.nbytes == cache.nbytes
    assert torch.equal(restorer.restore(face, [cache, cache]), restorer.restore(face, [loaded, loaded]))


def test_damaged_cache_file_raises_references_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ReferencesError, match="encode the references again"):
        ReferenceCache.load(bad)
    with pytest.raises(ReferencesError):
        ReferenceCache.load(tmp_path / "missing.safetensors")


def test_batch_of_identities_equals_single_calls(restorer):
    faces = images(4, 8)
    c1 = restorer.encode_references(images(1, 9))
    c3 = restorer.encode_references(images(3, 10))
    caches = [c3, None, c1, c3]
    seeds = [11, 12, 13, 14]
    batched = restorer.restore(faces, caches, noise_seeds=seeds)
    for i in range(4):
        single = restorer.restore(faces[i : i + 1], [caches[i]], noise_seeds=[seeds[i]])
        torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-5, atol=1e-5)


def test_same_input_twice_is_bitwise_identical(restorer):
    face, cache = images(2, 15), restorer.encode_references(images(2, 16))
    first = restorer.restore(face, [cache, None])
    second = restorer.restore(face.clone(), [cache, None])
    assert torch.equal(first, second)
    again = restorer.encode_references(images(2, 16))
    assert all(torch.equal(a, b) for a, b in zip(cache.keys, again.keys))
    assert again.key == cache.key


def test_noise_seed_is_per_track(restorer):
    face = images(1, 17)
    a = restorer.restore(face, [None], noise_seeds=[1])
    b = restorer.restore(face, [None], noise_seeds=[2])
    assert (a - b).abs().max() > 1e-5
    assert torch.equal(a, restorer.restore(face, [None], noise_seeds=[1]))


def test_output_contract(restorer):
    face = images(3, 18).double()
    out = restorer.restore(face, [None] * 3)
    assert out.dtype == torch.float32 and out.shape == face.shape
    assert out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="caches"):
        restorer.restore(face, [None])
    with pytest.raises(ValueError, match="shape"):
        restorer.restore(torch.rand(1, 3, 16, 16), [None])
    with pytest.raises(ValueError, match="at least one"):
        restorer.encode_references(torch.rand(0, 3, R, R))


def test_cache_to_dtype_and_nbytes(restorer):
    cache = restorer.encode_references(images(2, 19))
    half = cache.to(dtype=torch.float16)
    assert half.dtype == torch.float16 and half.nbytes < cache.nbytes
    assert cache.to("cpu", torch.float32) is cache
    per_ref_kv = sum(k.nbytes + v.nbytes for k, v in zip(cache.keys, cache.values)) // cache.num_references
    cfg = restorer.config
    assert paper_cache_bytes_per_reference(cfg.unet, cfg.latent_size, 4) == per_ref_kv


def test_paper_scale_cache_memory_per_reference():
    cfg = paper_config()
    # 9 layers: 3 x 16² x 1280, 3 x 32² x 640, 3 x 64² x 320 channels, keys + values
    elements = 2 * 3 * (16**2 * 1280 + 32**2 * 640 + 64**2 * 320)
    assert paper_cache_bytes_per_reference(cfg.unet, cfg.latent_size, 2) == elements * 2


@pytest.mark.parametrize("latent,changes", [("pixel", {}), ("vae", {"include_input_kv": True, "adain": False}),
                                            ("pixel", {"add_noise": False, "prediction_type": "sample", "freeu": None})])
def test_variants_restore_and_batch(latent, changes):
    r = make_restorer(latent, **changes)
    faces = images(2, 20)
    cache = r.encode_references(images(2, 21))
    out = r.restore(faces, [cache, None])
    assert out.shape == faces.shape
    torch.testing.assert_close(out[:1], r.restore(faces[:1], [cache]), rtol=1e-5, atol=1e-5)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="latent"):
        tiny_config(latent="vae").replace(latent="latent")
    with pytest.raises(ValueError, match="timestep"):
        tiny_config(timestep=1000)
    with pytest.raises(ValueError, match="channels"):
        tiny_config("pixel", pixel_factor=4)


def test_training_path_pack_kv_matches_cache_and_has_gradients(restorer):
    net = restorer.net
    face, refs = images(2, 22), images(4, 23)  # two faces, two references each
    caches = [restorer.encode_references(refs[:2]), restorer.encode_references(refs[2:])]
    want = restorer.restore(face, caches)
    lat = net.encode(refs, reference=True)
    kv = net.reference_kv(lat, restorer.fixed_noise(restorer.config.reference_noise_seed, 4))
    batch = pack_kv(net, kv, torch.ones(2, 2, dtype=torch.bool))
    x = face.clone().requires_grad_(True)
    maps = {net.shared_layers[-1]: None}
    x0 = net.denoise(net.encode(x), restorer.fixed_noise(restorer.config.noise_seed, 2), batch, attention_maps=maps)
    got = net.decode(x0)
    torch.testing.assert_close(got.detach(), want, rtol=1e-4, atol=1e-5)
    maps[net.shared_layers[-1]].for_reference(1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_residual_prediction_starts_as_the_identity_and_keeps_trained_weights(tmp_path):
    from streamrestore.model.checkpoint import read_model_file, save_restorer

    torch.manual_seed(0)
    net = InstantRestoreNet(tiny_config("pixel", prediction_type="residual", add_noise=False))
    fresh = InstantRestorer(net, device="cpu", dtype=torch.float32)
    face, refs = images(2, 30), images(2, 31)
    cache = fresh.encode_references(refs)
    for caches in ([None, None], [cache, cache]):
        assert torch.allclose(fresh.restore(face, caches), face, atol=1e-6)
    # a trained residual net is input + its output, and loading keeps the trained conv_out
    with torch.no_grad():
        net.unet.conv_out.weight.normal_(std=0.05)
    trained = fresh.restore(face, [cache, cache])
    assert (trained - face).abs().mean() > 1e-3
    loaded = InstantRestorer(read_model_file(save_restorer(net, tmp_path / "r.safetensors")), device="cpu",
                             dtype=torch.float32)
    assert torch.allclose(loaded.restore(face, [cache, cache]), trained, atol=1e-6)
    with pytest.raises(ValueError, match="prediction_type"):
        tiny_config("pixel", prediction_type="x0")


def test_reference_noise_shared_or_one_per_reference():
    """``per_reference`` (the paper config; the release draws one noise per reference) gives
    reference i the noise of seed + i; ``shared`` (lite, older model files) one noise for all."""
    import json

    from streamrestore.model.config import RestorerConfig

    shared = make_restorer()
    per_ref = make_restorer(reference_noise="per_reference")
    a, b = shared.reference_noise(3), per_ref.reference_noise(3)
    seed = shared.config.reference_noise_seed
    assert torch.equal(a[0], a[2]) and torch.equal(a[0], shared.fixed_noise(seed)[0])
    assert all(torch.equal(b[i], per_ref.fixed_noise(seed + i)[0]) for i in range(3))
    assert not torch.equal(b[0], b[1])
    faces = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(shared.encode_references(faces).keys[0], per_ref.encode_references(faces).keys[0])
    assert paper_config().reference_noise == "per_reference"
    old = json.loads(tiny_config().to_json())
    del old["reference_noise"]  # a model file written before the field existed keeps its behaviour
    assert RestorerConfig.from_json(json.dumps(old)).reference_noise == "shared"
    with pytest.raises(ValueError, match="reference_noise"):
        tiny_config(reference_noise="fresh")


def test_more_references_than_trained_with_are_used_and_the_cost_said(restorer, caplog):
    """All photos are encoded (the cache holds every one's keys); the warning says so, what the model
    was trained with, and that each photo costs attention time on every frame."""
    with caplog.at_level("WARNING", logger="streamrestore"):
        cache = restorer.encode_references(images(6, 4))
    assert cache.keys[0].numel() == 6 * restorer.encode_references(images(1, 4)).keys[0].numel()
    assert "the model is given 6 reference photos of one person, and was trained with up to 4" in caplog.text
    assert "attention time" in caplog.text
