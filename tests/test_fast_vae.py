"""--fast-vae: TAESD (shared/models/taesd) as the decoder of latent-space restorers."""
import logging

import pytest
import torch
from model_utils import randomise_lora
from safetensors.torch import load_file, save_file

from streamrestore.bench import _load as bench_load
from streamrestore.cli import build_parser, main
from streamrestore.cli.bench import build_parser as bench_parser
from streamrestore.cli.options import restorer_options
from streamrestore.errors import ModelError
from streamrestore.model import InstantRestoreNet, InstantRestorer, save_restorer, tiny_config
from streamrestore.model.fast_vae import load_taesd, load_taesd_decoder
from streamrestore.pipeline import load_restorer

R = 64  # TAESD decodes 8x latents: a 4-level tiny VAE at 64 px gives 8x8 latents


@pytest.fixture(scope="session")
def taesd(shared_models):
    folder = shared_models / "taesd"
    if not (folder / "taesd_decoder.safetensors").is_file():
        pytest.skip(f"TAESD weights not found in {folder}")
    return folder


def vae8_config(**changes):
    """tiny_config with an 8x VAE (4 levels), the latent geometry TAESD decodes."""
    vae = {
        "block_out_channels": [8, 8, 8, 8],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "sample_size": R,
    }
    return tiny_config("vae", vae=vae, resolution=R, **changes)


@pytest.fixture(scope="module")
def vae8_net():
    torch.manual_seed(0)
    net = InstantRestoreNet(vae8_config())
    randomise_lora(net)
    return net


def test_loads_from_folder_and_file(taesd):
    src = load_file(str(taesd / "taesd_decoder.safetensors"))
    for path in (taesd, taesd / "taesd_decoder.safetensors"):
        dec = load_taesd_decoder(path)
        # original index 1 (after the weightless clamp at 0) is diffusers' layers.0
        torch.testing.assert_close(dec.layers[0].weight, src["1.weight"].float())
        z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = dec(z)
        assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()
    model = load_taesd(taesd / "taesd_decoder.safetensors", encoder=True)  # encoder: the sibling file
    enc = load_file(str(taesd / "taesd_encoder.safetensors"))
    torch.testing.assert_close(model.encoder.layers[0].weight, enc["0.weight"].float())


def test_diffusers_layout_file(taesd, tmp_path):
    model = load_taesd(taesd, encoder=True)
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    again = load_taesd(tmp_path, encoder=True)
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_round_trip_reconstructs(taesd):
    model = load_taesd(taesd, encoder=True)
    # a smooth image: a tiny autoencoder should reproduce it closely
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    img = torch.stack([xx, yy, 0.5 * (xx + yy)])[None]
    with torch.no_grad():
        out = (model.decoder(model.encoder(img * 2 - 1)).clamp(-1, 1) + 1) / 2
    assert (out - img).abs().mean() < 0.05


def test_missing_and_wrong_files(taesd, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_taesd_decoder(tmp_path / "nope")
    with pytest.raises(ModelError, match="taesd_decoder.safetensors"):
        load_taesd_decoder(tmp_path)  # an empty folder
    bad = tmp_path / "other.safetensors"
    save_file({"0.weight": torch.zeros(3, 3)}, str(bad))
    with pytest.raises(ModelError, match="not a TAESD"):
        load_taesd_decoder(bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="cannot read"):
        load_taesd_decoder(junk)


def test_restore_with_fast_vae_differs_but_is_finite(taesd, vae8_net):
    g = torch.Generator().manual_seed(1)
    faces = torch.rand(2, 3, R, R, generator=g)
    refs = torch.rand(2, 3, R, R, generator=g)
    plain = InstantRestorer(vae8_net, device="cpu", dtype=torch.float32, name="tiny")
    cache = plain.encode_references(refs)
    base = plain.restore(faces, [cache, None])
    fingerprint = plain.fingerprint
    fast = InstantRestorer(vae8_net, device="cpu", dtype=torch.float32, name="tiny", fast_vae=taesd)
    assert fast.name == "tiny+taesd"
    assert fast.fingerprint == fingerprint  # references do not depend on the decoder
    out = fast.restore(faces, [cache, None])
    assert out.shape == base.shape and torch.isfinite(out).all()
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert (out - base).abs().mean() > 1e-3
    # the fast decoder is what decode() now runs; nothing of it enters the saved weights
    assert not any(k.startswith("fast_decoder") for k in vae8_net.weights_state_dict())
    vae8_net.use_fast_decoder(None)
    torch.testing.assert_close(plain.restore(faces, [cache, None]), base)


def test_pixel_model_ignores_fast_vae(taesd, caplog):
    net = InstantRestoreNet(tiny_config("pixel"))
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        r = InstantRestorer(net, device="cpu", dtype=torch.float32, name="pix", fast_vae=taesd)
    assert "ignored" in caplog.text and r.net.fast_decoder is None and r.name == "pix"
    with pytest.raises(ValueError, match="pixel"):
        net.use_fast_decoder(load_taesd_decoder(taesd))


def test_wrong_latent_geometry(taesd):
    net = InstantRestoreNet(tiny_config("vae"))  # 2x VAE
    with pytest.raises(ModelError, match="1/8"):
        InstantRestorer(net, device="cpu", dtype=torch.float32, fast_vae=taesd)


def test_cli_and_bench_wiring(taesd, vae8_net, tmp_path):
    model_file = save_restorer(vae8_net, tmp_path / "tiny8.safetensors")
    args = build_parser().parse_args(["in.mp4", "--model", str(model_file), "--fast-vae", str(taesd),
                                      "--device", "cpu", "--backend", "eager"])
    options = restorer_options(args)  # what the command hands FaceRestorer.from_options
    runner = load_restorer(options["model"], device=options["device"], backend=options["backend"],
                           fast_vae=options["fast_vae"])
    assert runner.backend == "eager" and runner.restorer.net.fast_decoder is not None
    assert runner.restorer.name == "tiny8+taesd"
    plain_args = build_parser().parse_args(["in.mp4", "--model", "lite"])
    assert plain_args.fast_vae is None and restorer_options(plain_args)["model"] == "lite"
    bench_args = bench_parser().parse_args(["in.mp4", "--fast-vae", str(taesd)])
    assert bench_args.fast_vae == str(taesd)
    loaded = bench_load(str(model_file), "cpu", None, None, str(taesd / "taesd_decoder.safetensors"))
    assert loaded.net.fast_decoder is not None
    identity = load_restorer("identity", device="cpu", backend="eager", fast_vae=str(taesd))  # warns, ignores it
    assert identity.name == "identity"


def test_cli_missing_fast_vae_is_one_line_error(tmp_path, capsys):
    code = main([str(tmp_path / "in.mp4"), "--fast-vae", str(tmp_path / "no-taesd"), "--no-progress"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("streamrestore: error:")]
    assert code == 2 and len(lines) == 1 and "no-taesd" in lines[0] and "Traceback" not in err
