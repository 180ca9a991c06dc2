"""Official checkpoint format, our safetensors format, and the model registry (tiny models)."""
from pathlib import Path

import pytest
import torch
from model_utils import randomise_lora
from safetensors.torch import save_file

from streamrestore.errors import ModelError
from streamrestore.model import (
    InstantRestoreNet,
    InstantRestorer,
    load_model,
    read_model_file,
    read_official_checkpoint,
    registry,
    save_restorer,
    tiny_config,
    write_official_checkpoint,
)
from streamrestore.model.checkpoint import apply_official_checkpoint

R = 32


def trained_net(seed=0):
    """A tiny net whose LoRA, conv_in and prompt are non-trivial, like a trained one."""
    torch.manual_seed(seed)
    net = InstantRestoreNet(tiny_config())
    g = randomise_lora(net, seed + 100)
    with torch.no_grad():
        net.prompt_embeds.normal_(generator=g)
    return net


def base_states(net):
    return net.ref_unet.state_dict(), net.ref_vae.state_dict()


def outputs(net):
    r = InstantRestorer(net, device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(5)
    faces, refs = torch.rand(2, 3, R, R, generator=g), torch.rand(2, 3, R, R, generator=g)
    return r.restore(faces, [r.encode_references(refs), None])


@pytest.fixture(scope="module")
def source():
    net = trained_net()
    return net, outputs(net)


def test_official_checkpoint_round_trip(source, tmp_path):
    net, want = source
    path = write_official_checkpoint(net, tmp_path / "final_model_ckpt.pt")
    ckpt = read_official_checkpoint(path)
    assert any(".lora_A.default." in k for k in ckpt.state_dict_unet)
    assert any(".lora_B.vae_skip." in k for k in ckpt.state_dict_vae)
    assert "conv_in.weight" in ckpt.state_dict_unet
    assert all("lora" in k or "conv_in" in k for k in ckpt.state_dict_unet)

    fresh = InstantRestoreNet(ckpt.apply_to_config(tiny_config()))  # different random init
    fresh.load_base_weights(*base_states(net))
    apply_official_checkpoint(fresh, ckpt, path)
    with torch.no_grad():
        fresh.prompt_embeds.copy_(net.prompt_embeds)
    assert torch.equal(outputs(fresh), want)


def test_corrupt_checkpoint_is_a_model_error(tmp_path):
    bad = tmp_path / "final_model_ckpt.pt"
    bad.write_bytes(b"\x80\x02garbage")
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        read_official_checkpoint(bad)
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not an InstantRestore checkpoint"):
        read_official_checkpoint(tmp_path / "other.pt")


def test_mismatched_checkpoint_lists_first_unmatched_keys(source, tmp_path):
    net, _ = source
    path = write_official_checkpoint(net, tmp_path / "ckpt.pt")
    data = torch.load(path, weights_only=True)
    renamed = {k.replace("up_blocks.", "upblocks."): v for k, v in data["state_dict_unet"].items()}
    data["state_dict_unet"] = renamed
    torch.save(data, path)
    ckpt = read_official_checkpoint(path)
    fresh = InstantRestoreNet(ckpt.apply_to_config(tiny_config()))
    with pytest.raises(ModelError, match="upblocks.") as info:
        apply_official_checkpoint(fresh, ckpt, path)
    assert "not in the checkpoint" in str(info.value)  # the real names are reported missing too

    # a checkpoint from a different rank does not fit a model built with another rank
    data = torch.load(write_official_checkpoint(net, tmp_path / "c2.pt"), weights_only=True)
    other = InstantRestoreNet(tiny_config().replace(unet_lora=tiny_config().unet_lora.__class__(rank=8)))
    ckpt = read_official_checkpoint(tmp_path / "c2.pt")
    with pytest.raises(ModelError, match="wrong shape"):
        apply_official_checkpoint(other, ckpt)


def test_our_format_round_trip_and_errors(source, tmp_path):
    net, want = source
    path = save_restorer(net, tmp_path / "model.safetensors")
    assert torch.equal(outputs(read_model_file(path)), want)
    restorer = load_model(path, device="cpu")
    assert restorer.resolution == R and restorer.name == "model"

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    with pytest.raises(ModelError, match="cannot read"):
        read_model_file(bad)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelError, match="not a streamrestore model"):
        read_model_file(tmp_path / "plain.safetensors")


def test_lite_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "LITE_WEIGHTS", tmp_path / "lite.safetensors")
    with pytest.raises(ModelError, match="lite"):
        load_model("lite", device="cpu")
    with pytest.raises(ModelError, match="unknown model"):
        load_model("no-such-model", device="cpu")


def test_instantrestore_offline_lists_every_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(registry, "prompt_cache_path", lambda: tmp_path / "nope" / "prompt.safetensors")
    with pytest.raises(ModelError) as info:
        load_model("instantrestore", device="cpu", root=tmp_path, download=False)
    msg = str(info.value)
    for name in ("final_model_ckpt.pt", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                 "sd-vae-ft-mse/config.json", "prompt_embeds.safetensors", "text_encoder/config.json"):
        assert name in msg, name
    assert str(tmp_path) in msg  # says where to put the files
    # the download command huggingface_hub installs (it has had no huggingface-cli since the pinned versions)
    assert "(or: hf download hwdz15508/InstantRestore final_model_ckpt.pt)" in msg
    # the CLI prints this list of files a line each (other messages are one line, a name's newline escaped)
    import contextlib
    import io

    from streamrestore.cli import app

    def fails(argv, stop=None):
        raise info.value

    monkeypatch.setattr(app, "restore_main", fails)
    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        assert app._main(["x.mp4"]) == 2
    assert said.getvalue() == f"streamrestore: error: {msg}\n" and msg.count("\n") >= 6


def _official_layout(net, root: Path) -> None:
    """``net``'s UNet, VAE and checkpoint in the documented local layout under ``root`` (no prompt)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    cfg = tiny_config()
    unet = UNet2DConditionModel.from_config(cfg.unet)
    unet.load_state_dict(net.ref_unet.state_dict())
    unet.save_pretrained(root / "sd-turbo" / "unet")
    vae = AutoencoderKL.from_config(cfg.vae)
    vae.load_state_dict(net.ref_vae.state_dict())
    vae.save_pretrained(root / "sd-vae-ft-mse")
    write_official_checkpoint(net, root / "final_model_ckpt.pt")


def test_instantrestore_from_local_folders(source, tmp_path, monkeypatch):
    """The official route end to end with tiny files in the documented local layout."""
    net, want = source
    root = tmp_path / "ir"
    _official_layout(net, root)
    save_file({"prompt_embeds": net.prompt_embeds.detach().clone()}, str(root / "prompt_embeds.safetensors"))

    restorer = load_model("instantrestore", device="cpu", root=root, download=False,
                          config=tiny_config())
    g = torch.Generator().manual_seed(5)
    faces, refs = torch.rand(2, 3, R, R, generator=g), torch.rand(2, 3, R, R, generator=g)
    got = restorer.restore(faces, [restorer.encode_references(refs), None])
    assert torch.equal(got, want)


def test_a_computed_prompt_is_kept_whole_under_its_cache_name(source, tmp_path, monkeypatch):
    """The prompt computed from SD-Turbo's text encoder was written in place in the cache: a second first run at
    once could read half a file. It is written under a temporary name of this process's and moved into place."""
    from safetensors.torch import load_file
    from safetensors.torch import save_file as real_save

    net, _ = source
    root = tmp_path / "ir"
    _official_layout(net, root)
    for name in ("text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/vocab.json",
                 "tokenizer/merges.txt", "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json"):
        (root / "sd-turbo" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "sd-turbo" / name).write_text("{}")  # (the encoder itself is stood in for below)
    kept = tmp_path / "cache" / "prompt.safetensors"
    monkeypatch.setattr(registry, "prompt_cache_path", lambda: kept)
    written = []

    def save_file(tensors, name):
        written.append(name)
        real_save(tensors, name)

    monkeypatch.setattr("safetensors.torch.save_file", save_file)
    monkeypatch.setattr(registry, "compute_prompt_embedding", lambda te, tok: net.prompt_embeds.detach().clone())
    load_model("instantrestore", device="cpu", root=root, download=False, config=tiny_config())
    assert written and written[0] != str(kept) and written[0].endswith(".tmp")
    assert list(kept.parent.iterdir()) == [kept]
    assert torch.equal(load_file(str(kept))["prompt_embeds"], net.prompt_embeds.detach())


def test_a_saved_model_file_is_readable_by_others_as_any_file_a_tool_writes(tmp_path):
    """safetensors writes 0600; an exported model is meant to be shared (mode 0666 less the umask)."""
    import os

    from streamrestore.model.checkpoint import save_restorer
    from streamrestore.model.config import tiny_config
    from streamrestore.model.restorer import InstantRestoreNet

    old = os.umask(0o022)
    try:
        path = save_restorer(InstantRestoreNet(tiny_config("pixel")), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644
