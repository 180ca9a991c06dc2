"""Parity with the official InstantRestore code (snap-research/InstantRestore @ 735217a).

``fixtures/official_parity.npz`` holds what the official ``Pix2Pix_Turbo`` computed, with random
weights, for one degraded face and 4 references at a reduced size (32 px, 8x8 latents): the
reference latents and keys/values of every shared layer, the input latent, the noised latent,
the UNet output, x0 and the decoded image, for the final model and each ablation. The weights
are not stored: both sides draw them by tensor name (:mod:`streamrestore.model.random_weights`).
The official code is not needed here; ``tools/official_parity.py generate`` wrote the file
(see docs/parity.md). Offline, CPU, a few seconds per case.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from script_utils import load_script

from streamrestore.model.cache import ReferenceCache
from streamrestore.model.config import FreeU, paper_config
from streamrestore.model.packing import pack_kv
from streamrestore.model.restorer import InstantRestorer

TOL = 1e-4  # max abs difference, fp32
FIXTURE = Path(__file__).parent / "fixtures" / "official_parity.npz"
parity = load_script("tools/official_parity.py")

VARIANTS = ("final", "adain", "lmattn", "base")


@pytest.fixture(scope="module")
def fixture():
    return parity.read_fixture(FIXTURE)


def diffs_for(fixture, variant, **changes):
    arrays, meta = fixture
    net = parity.build_ours(meta, variant, **changes)
    return parity.max_abs_diffs(parity.ours(net, arrays), parity.official(arrays, variant))


def test_fixture_is_what_the_tests_expect(fixture):
    arrays, meta = fixture
    assert meta["size"] == "reduced" and meta["resolution"] == 32
    assert set(meta["variants"]) == set(VARIANTS)
    assert arrays["references"].shape[0] == 4 and meta["num_layers"] == 4
    assert FIXTURE.stat().st_size < 400_000


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_compared_tensor_matches_the_official_code(fixture, variant):
    diffs = diffs_for(fixture, variant)
    assert set(diffs) >= {"latent_refs", "ref_k0", "ref_v3", "latent", "x_t", "eps", "x0", "image"}
    bad = {k: v for k, v in diffs.items() if not v <= TOL}
    assert not bad, f"{variant}: above {TOL}: {bad}"


@pytest.mark.parametrize("change, where", [
    ({"adain": "flip"}, "eps"),
    ({"freeu": FreeU(s1=1.0)}, "eps"),
    ({"freeu": FreeU(b2=1.4)}, "eps"),
    ({"freeu": None}, "eps"),
    ({"reference_timestep": 249}, "ref_k3"),
    ({"timestep": 499}, "x_t"),
    ({"include_input_kv": True}, "eps"),
    ({"adain_eps": 0.1}, "eps"),
    ({"reference_noise": "shared"}, None),
], ids=["adain", "freeu-s1", "freeu-b2", "freeu-off", "ref-timestep", "timestep", "own-kv", "adain-eps", "ref-noise"])
def test_a_known_difference_breaks_parity(fixture, change, where):
    """Each setting the official forward depends on, changed in our model, is caught by the fixture."""
    variant = "final"
    if change.get("adain") == "flip":
        change = {"adain": not parity.VARIANT_ADAIN[variant]}
    if where is None:  # a restorer-level setting: the public API's output must move
        arrays, meta = fixture
        got = _restore(parity.build_ours(meta, variant, **change), arrays)
        assert (got - (torch.from_numpy(arrays["final/image"]) + 1) / 2).abs().max() > 10 * TOL
        return
    diffs = diffs_for(fixture, variant, **change)
    assert diffs[where] > 10 * TOL, diffs
    assert diffs["image"] > TOL or where.startswith("ref_"), diffs


def test_the_ablations_differ_from_each_other(fixture):
    """Guards the fixture itself: AdaIN and the per-variant weights change the output."""
    arrays, _ = fixture
    images = [arrays[f"{v}/image"] for v in VARIANTS]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).max() > 1e-2


def _faces(a):
    return torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255


def _restore(net, arrays):
    with torch.no_grad():
        net.prompt_embeds.copy_(torch.from_numpy(arrays["prompt"]))
    r = InstantRestorer(net, device="cpu", dtype=torch.float32)
    return r.restore(_faces(arrays["degraded"][None]), [r.encode_references(_faces(arrays["references"]))])


def test_restorer_api_with_cached_references_matches(fixture, tmp_path):
    """The public path: encode_references once (kept on disk), restore the face; the release
    recomputes the references' K/V on every call, we reuse them: the output is the same."""
    arrays, meta = fixture
    net = parity.build_ours(meta, "final")
    with torch.no_grad():
        net.prompt_embeds.copy_(torch.from_numpy(arrays["prompt"]))
    r = InstantRestorer(net, device="cpu", dtype=torch.float32)
    want = (torch.from_numpy(arrays["final/image"]) + 1) / 2
    refs, degraded = _faces(arrays["references"]), _faces(arrays["degraded"][None])
    first = r.encode_references(refs)
    first.save(tmp_path / "refs.safetensors")
    again = ReferenceCache.load(tmp_path / "refs.safetensors")  # read back from disk
    for cache in (first, again):
        got = r.restore(degraded, [cache])
        assert (got - want).abs().max() <= TOL


def _all_real(n: int) -> torch.Tensor:
    """The reference mask of one face with n real references."""
    return torch.ones(1, n, dtype=torch.bool)


def test_zero_padded_references_are_the_only_padding_difference(fixture):
    """Deliberate difference: with 2 real references in 4 slots the release zeroes the other two's
    keys/values, which still take softmax weight; we mask them. Our processors fed the release's
    zero padding reproduce its output; our masked output differs from it."""
    arrays, meta = fixture
    net = parity.build_ours(meta, "final")
    want = torch.from_numpy(arrays["final/image_valid2"])
    with torch.inference_mode():
        net.prompt_embeds.copy_(torch.from_numpy(arrays["prompt"]))
        refs, degraded = _faces(arrays["references"]), _faces(arrays["degraded"][None])
        c, s = net.config.latent_channels, net.config.latent_size
        noise = torch.randn(1, c, s, s, generator=torch.Generator().manual_seed(meta["noise_seed"]))
        ref_noise = parity.reference_noises(c, s, meta["reference_noise_seed"], 4)
        kv = net.reference_kv(net.encode(refs, reference=True), ref_noise)
        zeroed = {n: (k.clone().index_fill_(0, torch.tensor([2, 3]), 0.0), v.clone().index_fill_(0, torch.tensor([2, 3]), 0.0))
                  for n, (k, v) in kv.items()}
        latent = net.encode(degraded)
        first_two = {n: (k[:2], v[:2]) for n, (k, v) in kv.items()}
        as_release = net.decode(net.denoise(latent, noise, pack_kv(net, zeroed, _all_real(4)))) * 2 - 1
        masked = net.decode(net.denoise(latent, noise, pack_kv(net, first_two, _all_real(2)))) * 2 - 1
    assert (as_release - want).abs().max() <= TOL
    assert (masked - want).abs().max() > 1e-2


def _write_base_files(meta, root: Path):
    """SD-Turbo / sd-vae-ft-mse folders holding the reduced architecture's random base weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from streamrestore.model.random_weights import fill_module

    for sub, cls, cfg, weights in (("sd-turbo/unet", UNet2DConditionModel, meta["unet"], "diffusion_pytorch_model.safetensors"),
                                   ("sd-vae-ft-mse", AutoencoderKL, meta["vae"], "diffusion_pytorch_model.safetensors")):
        folder = root / sub
        folder.mkdir(parents=True)
        m = cls.from_config(cfg)
        fill_module(m, meta["weight_seed"])
        (folder / "config.json").write_text(json.dumps(dict(m.config)))
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(folder / weights))


@pytest.mark.parametrize("layout", ["save_model", "training"])
def test_official_checkpoint_layouts_load_and_match(fixture, tmp_path, layout):
    """A checkpoint in the official key layout (rebuilt from the layout the official code wrote,
    value for value; the generator checked that) loads through load_instantrestore_net and gives
    the official outputs. The training layout also carries use_adain: it overrides our config."""
    from streamrestore.model.registry import load_instantrestore_net

    arrays, meta = fixture
    variant = meta["layout_variant"]
    if layout == "save_model":
        data = parity.rebuild_save_model(meta["save_model_layout"], variant, meta["weight_seed"])
    else:
        data = parity.rebuild_coach(meta["coach_layout"], meta["coach_cfg"], variant, meta["weight_seed"])
    torch.save(data, tmp_path / "final_model_ckpt.pt")
    _write_base_files(meta, tmp_path)
    save_file({"prompt_embeds": torch.from_numpy(arrays["prompt"]).contiguous()}, str(tmp_path / "prompt_embeds.safetensors"))
    adain = parity.VARIANT_ADAIN[variant] if layout == "save_model" else not parity.VARIANT_ADAIN[variant]
    config = paper_config(resolution=meta["resolution"], adain=adain)
    net = load_instantrestore_net(root=tmp_path, config=config, download=False)
    assert net.config.adain == parity.VARIANT_ADAIN[variant]
    assert net.config.unet_lora.lora_alpha == meta["rank"] // 2
    diffs = parity.max_abs_diffs(parity.ours(net.eval(), arrays), parity.official(arrays, variant))
    bad = {k: v for k, v in diffs.items() if not v <= TOL}
    assert not bad, bad


def test_released_ablation_names_set_adain(fixture, tmp_path):
    """The compact layout does not record AdaIN: the released file name (or ``variant``) does."""
    from streamrestore.model.registry import load_instantrestore_net

    arrays, meta = fixture
    data = parity.rebuild_save_model(meta["save_model_layout"], meta["layout_variant"], meta["weight_seed"])
    _write_base_files(meta, tmp_path)
    save_file({"prompt_embeds": torch.from_numpy(arrays["prompt"]).contiguous()}, str(tmp_path / "prompt_embeds.safetensors"))
    for name, adain in (("base_ablation_ckpt.pt", False), ("lmattn_ablation_ckpt.pt", False),
                        ("adain_ablation_ckpt.pt", True), ("final_model_ckpt.pt", True)):
        torch.save(data, tmp_path / name)
        net = load_instantrestore_net(checkpoint=tmp_path / name, root=tmp_path, download=False)
        assert net.config.adain is adain, name
